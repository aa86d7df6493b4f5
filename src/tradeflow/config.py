"""Settings from the environment and `.env`: where the store and data folders live.

Secrets (broker credentials) are added by the brokers issue as ``SecretStr`` fields;
nothing here is ever printed or logged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "settings", "project_root", "BrokerSettings", "broker_settings"]


def project_root(start: Path | None = None) -> Path:
    """The checkout this process works in: ``TRADEFLOW_HOME``, else the nearest folder
    upwards holding tradeflow's ``pyproject.toml``, else the current folder.

    Relative store and data paths resolve against it, so a notebook opened from
    ``notebooks/`` and a CLI run from the top level share one store.
    """
    import os

    home = os.environ.get("TRADEFLOW_HOME")
    if home:
        return Path(home).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        marker = folder / "pyproject.toml"
        if marker.is_file() and 'name = "tradeflow"' in marker.read_text(errors="ignore"):
            return folder
    return here


class Settings(BaseSettings):
    """Paths and defaults. Override with ``TRADEFLOW_*`` variables or a `.env` file."""

    model_config = SettingsConfigDict(env_prefix="TRADEFLOW_", env_file=".env", extra="ignore", env_ignore_empty=True)

    store_root: Path = Path("parquet")
    """Root of the Parquet candle store."""
    data_dir: Path = Path("data")
    """Instrument masters, session cache, journal, run outputs."""
    default_source: str = "sim"
    """Source used when none is named: the embedded simulated market."""
    sim_seed: int = 42
    """Seed of the simulated market; the same seed gives the same candles."""
    allow_live: bool = False
    """``TRADEFLOW_ALLOW_LIVE=1``: the second key that live orders need (with ``mode: live``)."""

    @model_validator(mode="after")
    def _anchor_paths(self) -> "Settings":
        root = project_root()
        if not self.store_root.is_absolute():
            self.store_root = root / self.store_root
        if not self.data_dir.is_absolute():
            self.data_dir = root / self.data_dir
        return self

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"


class BrokerSettings(BaseSettings):
    """Broker addresses (public defaults; point them at a sandbox or a local fake) and
    credentials, from the environment or ``.env``. Secrets are ``SecretStr``: their repr is
    masked, and code must call ``get_secret_value()`` to use one."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    dhan_base_url: str = "https://api.dhan.co/v2"
    dhan_auth_url: str = "https://auth.dhan.co"
    dhan_master_url: str = "https://images.dhan.co/api-data/api-scrip-master-detailed.csv"
    dhan_feed_url: str = "wss://api-feed.dhan.co"
    definedge_base_url: str = "https://integrate.definedgesecurities.com/dart/v1/"
    definedge_login_url: str = "https://signin.definedgesecurities.com/auth/realms/debroking/dsbpkc/"
    definedge_data_url: str = "https://data.definedgesecurities.com/sds/history/"
    definedge_master_url: str = "https://app.definedgesecurities.com/public/allmaster.zip"
    definedge_ws_url: str = "wss://trade.definedgesecurities.com/NorenWSTRTP/"
    http_timeout: float = 10.0

    dhan_client_id: str | None = None
    dhan_access_token: SecretStr | None = None
    dhan_pin: SecretStr | None = None
    dhan_totp_secret: SecretStr | None = None
    definedge_api_token: SecretStr | None = None
    definedge_api_secret: SecretStr | None = None
    definedge_totp_secret: SecretStr | None = None
    definedge_algo_id: str | None = None


def broker_settings() -> BrokerSettings:
    """Read broker settings now (not cached: tests and long sessions change the environment)."""
    return BrokerSettings()


@lru_cache(maxsize=1)
def _cached() -> Settings:
    return Settings()


def settings(*, reload: bool = False) -> Settings:
    """The process-wide settings (read once; ``reload=True`` re-reads the environment)."""
    if reload:
        _cached.cache_clear()
    return _cached()

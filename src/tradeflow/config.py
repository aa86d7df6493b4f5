"""Settings from the environment and `.env`: where the store and data folders live.

Secrets (broker credentials) are added by the brokers issue as ``SecretStr`` fields;
nothing here is ever printed or logged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "settings", "project_root"]


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

    model_config = SettingsConfigDict(env_prefix="TRADEFLOW_", env_file=".env", extra="ignore")

    store_root: Path = Path("parquet")
    """Root of the Parquet candle store."""
    data_dir: Path = Path("data")
    """Instrument masters, session cache, journal, run outputs."""
    default_source: str = "sim"
    """Source used when none is named: the embedded simulated market."""
    sim_seed: int = 42
    """Seed of the simulated market; the same seed gives the same candles."""

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


@lru_cache(maxsize=1)
def _cached() -> Settings:
    return Settings()


def settings(*, reload: bool = False) -> Settings:
    """The process-wide settings (read once; ``reload=True`` re-reads the environment)."""
    if reload:
        _cached.cache_clear()
    return _cached()

"""tradeflow: a research-to-live trading workbench for Indian markets."""

__version__ = "0.1.0"

# Two commands do all the setup on a fresh clone: `make demo` and `make test`.
# Each creates .venv (Python 3.11) and installs tradeflow with its dev extra first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lab fetch backtest sweep paper kill bench clean help

help:
	@echo "make setup   create .venv and install tradeflow[dev]"
	@echo "make demo    run the demo notebooks on the simulated market (outputs in data/runs/)"
	@echo "make test    run the test suite"
	@echo "make lab     start JupyterLab"
	@echo "make fetch   fetch a month of simulated NIFTY/BANKNIFTY 1m bars into parquet/"
	@echo "make backtest  backtest params/backtest_nifty.yaml (make sweep: with its grid)"
	@echo "make paper   paper-trade NIFTY on the simulated live stream (latest session at 60x when closed)"
	@echo "make kill    kill switch: every active run cancels, flattens and stops"
	@echo "make bench   print the benchmarks (store, indicators, sweep, engine)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "tradeflow needs Python 3.11+, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tradeflow demo -p params/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

fetch: $(STAMP)
	$(BIN)/tradeflow fetch --source sim --symbol NIFTY --symbol BANKNIFTY --timeframe 1m --start 2024-01-01 --end 2024-01-31

bench: $(STAMP)
	$(BIN)/python bench/store.py
	$(BIN)/python bench/indicators.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache

backtest: $(STAMP)
	$(BIN)/tradeflow backtest -p params/backtest_nifty.yaml

sweep: $(STAMP)
	$(BIN)/tradeflow sweep -p params/backtest_nifty.yaml

paper: $(STAMP)
	$(BIN)/tradeflow trade -p params/paper_nifty.yaml --feed sim --set when_closed=latest --set speed=60

kill: $(STAMP)
	$(BIN)/tradeflow kill

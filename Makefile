# zkmeter: every target creates .venv and installs the project first (pip, PyPI only).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install lint typecheck test test-fast demo bench clean

$(STAMP): pyproject.toml contracts/package-lock.json
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "zkmeter needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	cd contracts && npm ci --no-audit --no-fund
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy circuits verifier prover

# The whole suite: lint, types, then every test (SQLite and the PostgreSQL at 127.0.0.1:5432).
test: lint typecheck
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -x -q -m "not slow"

# The whole story on the embedded defaults (SQLite, in-process EVM); artifacts in ./zkmeter-demo.
demo: install
	$(BIN)/zkmeter demo

bench: install
	$(BIN)/python -m bench.proofs --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

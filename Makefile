# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv and installs callrt (with its test extra) when missing or out of date.

PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench walkthrough clean

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/callrt demo

test: $(STAMP)
	bash scripts/test.sh

walkthrough: $(STAMP)
	$(VENV)/bin/callrt walkthrough

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy signaling media devices benchmarks

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks

clean:
	rm -rf $(VENV) artifacts .devices .pytest_cache

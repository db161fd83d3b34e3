# Quickstart: `make demo` runs the example batch on the local profile; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
SURFACES ?= 8

.PHONY: venv demo test clean

$(BIN)/resqmp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/resqmp

demo: venv
	$(BIN)/resqmp example --out $(DEMO) --surfaces $(SURFACES)
	$(BIN)/resqmp launch --profile local --batch $(DEMO)/batch.yaml --output $(DEMO)/faults.epc
	@echo "demo: recombined model at $(abspath $(DEMO))/faults.epc (report: $(abspath $(DEMO))/faults.report.json)"

# Tests that need SLURM, SGE or podman start them through ci/*/start.sh (idempotent, needs root + apt).
test: venv
	$(BIN)/pytest -q -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache

# Two entry points (README): `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv and install into it. torch comes from constraints/cpu.txt (the CPU build
# 2.13.0); set CONSTRAINTS= to keep whatever torch your machine resolves (e.g. a CUDA build).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints/cpu.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
RUN ?= runs/quickstart

.PHONY: install install-test demo test wheel-smoke fuzz lint benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PIP_C) -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PIP_C) -e ".[test]"

demo: install
	$(BIN)/asa-deploy quickstart --out $(RUN)

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
# tests/test_report.py renders report.html in headless Chromium and skips without it:
# apt-get install chromium (the tests never install anything themselves).
test: install-test
	$(BIN)/python -m ruff check asa_deploy tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The built wheel in a clean venv without the test extra, run from outside the tree: --version,
# models, a 1-epoch train, compile, simulate, report (.ci/wheel_smoke.sh; CI runs it after test).
wheel-smoke: $(BIN)/python
	CONSTRAINTS=$(CONSTRAINTS) PYTHON=$(BIN)/python bash .ci/wheel_smoke.sh

# The property-based tests with thousands of generated inputs each (make test runs a few hundred).
fuzz: install-test
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q tests/test_fuzz_data.py \
		tests/test_fuzz_configs.py tests/test_cli_args.py

benchmark: install
	$(BIN)/python benchmarks/train_throughput.py --out benchmarks/results/train_throughput.json

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# `make demo` and `make test` each do all of their own set-up: a .venv with requirements-dev.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench bench-quick clean

$(STAMP): requirements.txt requirements-dev.txt requirements-export.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	PY=$(PY) bash demo.sh

# test: everything, as CI runs it. test-fast: every library test (tests/multilabel/, the shared
# files' tests) and the quick script tests, without the end-to-end runs marked slow (pytest.ini).
test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q

test-fast: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.throughput

bench-quick: $(STAMP)
	$(PY) -m benchmarks.throughput --quick

clean:
	rm -rf demo_out bench_out

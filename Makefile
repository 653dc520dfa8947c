# make sweep: install into .venv and run the TwoMoon sweep (Table 2)
# make test:  install into .venv and run the tests, but the slow ones (about 14 minutes on 2 cores)
# make test-repro: Table 2 to the digit, with both losses (CI runs it)
# make test-effects: the stand-ins' effect tests: the MM student expands its teacher on synthetic RAVDESS, NYU and
#                    events data (minutes; run it when changing a task, a method, a regularizer or a trainer)
# make test-numerics: the floating-point tests (but the slow ones) again on 2 threads (make test's workers run on
#                    one each), with MKL, oneDNN and ATen
#                    held to AVX2 (CI runs it)
# make test-matrix: the whole suite on 1 and 2 threads, each with the CPU's own dispatch and with AVX2
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

AVX2 := MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2

.PHONY: sweep smoke test test-repro test-effects test-fast test-numerics test-matrix bench

# The install: uv (from PyPI, into the venv) installs the project at the versions of constraints.txt, the set the tests
# passed with, in seconds where pip takes minutes (torch's CUDA libraries are GBs). uv does not read pip's
# configuration, so the package sources pip is configured with (a mirror, a wheel folder) are passed along.
# --compile-bytecode, as pip does: where PYTHONDONTWRITEBYTECODE is set no process would ever write the .pyc
# files, and each would compile torch, Ray and MLflow anew (the suite took twice as long).
pip_config = $(shell $(PYTHON) -m pip config get global.$(1) 2>/dev/null)
UV_SOURCES = $(foreach url,$(call pip_config,index-url),--index-url $(url)) \
	$(foreach url,$(call pip_config,extra-index-url),--extra-index-url $(url)) \
	$(foreach dir,$(call pip_config,find-links),--find-links $(dir)) --index-strategy unsafe-best-match

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) $(UV_SOURCES) -c constraints.txt -e '.[test]'
	touch $@

sweep: $(VENV)/.installed
	$(PY) -m mke_ray.sweep sweeps/twomoon_grid.yaml

smoke: $(VENV)/.installed
	$(PY) -m mke_ray.sweep sweeps/twomoon_grid.yaml --smoke-test

# two workers (pytest-xdist), each file on one of them with its fixtures; WORKERS=0 runs the tests in this process
WORKERS ?= 2
test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" -n $(WORKERS) --dist loadscope --no-loadscope-reorder

# in one process: each sweep's own Ray trials use both cores (on two workers the two sweeps took 3m18s-4m36s, one
# after the other 2m49s)
test-repro: $(VENV)/.installed
	$(PY) -m pytest -m "slow and not effects"

test-effects: $(VENV)/.installed
	$(PY) -m pytest -m effects -n $(WORKERS) --dist load

# the tests that need no server, cluster, browser or second Ray of their own: a quick check while editing
test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow and not infra"

test-numerics: $(VENV)/.installed
	MKE_TEST_THREADS=2 $(AVX2) $(PY) -m pytest -m "numerics and not slow"

test-matrix: $(VENV)/.installed
	for threads in 1 2; do \
		MKE_TEST_THREADS=$$threads $(PY) -m pytest && MKE_TEST_THREADS=$$threads $(AVX2) $(PY) -m pytest || exit 1; \
	done

bench: $(VENV)/.installed
	$(PY) benchmarks/twomoon_sweep.py

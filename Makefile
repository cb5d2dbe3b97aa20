# Two commands are all the set-up a fresh machine needs:
#   make figures   # the main job (quick profile, CPU)
#   make test      # the whole test suite
# Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.normdyn-installed
# The CPU build of torch; pip finds it in the local wheel cache here.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?= -n 2

.PHONY: test figures check lint bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e '.[dev,torch]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

figures: $(STAMP)
	$(VENV)/bin/normdyn figures --launcher local --jobs 2 --out paper_figures/quick

check: $(STAMP)
	$(VENV)/bin/normdyn check

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/simulator_throughput.py
	$(PY) benchmarks/monitor_overhead.py

clean-venv:
	rm -rf $(VENV)
